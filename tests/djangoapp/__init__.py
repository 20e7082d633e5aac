"""A minimal Django project, served by the command-line tests (tests/test_cli.py)."""
