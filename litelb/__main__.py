import sys

from litelb.cli import main

sys.exit(main())
