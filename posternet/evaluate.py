"""`python -m posternet.evaluate`: the command of posternet.serve.evaluate."""

from posternet.serve import evaluate

if __name__ == '__main__':
  evaluate.entry()
