"""The ``xpmlp`` subcommands that are not modules of their own elsewhere."""
