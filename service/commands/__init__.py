"""One module per ``wbdwi`` subcommand (see :mod:`service.cli`)."""
