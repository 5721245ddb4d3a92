"""`python -m posternet.train`: the trainer's command (posternet.train.trainer)."""

from posternet.train import trainer

if __name__ == '__main__':
  trainer.entry()
