"""``python -m tinyexport.train`` (for ``torchrun ... -m tinyexport.train``) = ``tinytrain``."""

from tinyexport.train.cli import main

raise SystemExit(main())
