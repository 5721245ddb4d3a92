"""`python -m posternet.synthetic`: the command of posternet.data.synthetic."""

from posternet.data import synthetic

if __name__ == '__main__':
  synthetic.entry()
