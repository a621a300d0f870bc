"""``python -m uniqc_taskstore.cli``: the same as ``uniqc-tasks``."""

from . import main

raise SystemExit(main())
