import sys

from tinyexport.export.cli import main

sys.exit(main())
