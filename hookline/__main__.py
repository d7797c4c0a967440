"""`python -m hookline`: the same as the `hookline` command."""

from hookline.processes.cli import main

if __name__ == "__main__":
    main()
