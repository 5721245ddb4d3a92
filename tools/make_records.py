"""`python -m tools.make_records`: the command of posternet.data.make_records."""

from posternet.data import make_records

if __name__ == '__main__':
  make_records.entry()
