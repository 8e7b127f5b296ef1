"""The discdiff command line (Typer). Installed as discdiff.cli."""
