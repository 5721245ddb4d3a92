"""`python -m posternet.data_service`: the servers' command.

Its code is posternet/data/service_servers.py.
"""

from posternet.data import service_servers

if __name__ == '__main__':
  service_servers.entry()
