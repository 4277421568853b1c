"""The ``bridge`` command line, through click's CliRunner and as a process."""
