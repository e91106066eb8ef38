"""The demo distribution's subcommands, registered with ``lagscaler`` through entry points."""
