"""The ``unlearnx`` command line (installed as ``unlearnx.cli``)."""
