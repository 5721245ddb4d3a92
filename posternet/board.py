"""`python -m posternet.board`: the command of posternet.observe.board."""

from posternet.observe import board

if __name__ == '__main__':
  board.entry()
