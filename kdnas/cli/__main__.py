"""``python -m kdnas.cli ...``: the `kdnas` command."""

import sys

from kdnas.cli._main import main

sys.exit(main())
