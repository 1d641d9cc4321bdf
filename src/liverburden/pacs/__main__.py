"""``python -m liverburden.pacs listen|orthanc ...``."""

import sys

from . import main

sys.exit(main())
