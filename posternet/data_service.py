"""`python -m posternet.data_service`: the command of posternet.data.service."""

from posternet.data import service

if __name__ == '__main__':
  service.entry()
