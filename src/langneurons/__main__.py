"""``python -m langneurons ...`` (and ``torchrun ... -m langneurons record ...``): the ``langneurons`` command."""

import sys

from langneurons.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
