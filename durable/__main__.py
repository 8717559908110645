"""``python -m durable`` is the ``durable`` command."""

from durable.cli import main

raise SystemExit(main())
