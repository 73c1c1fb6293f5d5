"""`python -m bot`: the commands live in `bot.cli.main`."""

from bot.cli.main import main

raise SystemExit(main())
