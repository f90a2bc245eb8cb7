"""`python -m keras_relu_kit`: the command line."""

import sys

from keras_relu_kit.cli import main

if __name__ == "__main__":
    sys.exit(main())
