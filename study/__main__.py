import sys

from study.cli import entry

sys.exit(entry())
