"""`python -m posternet.predict`: the command of posternet.serve.predict."""

from posternet.serve import predict

if __name__ == '__main__':
  predict.entry()
