"""`python -m revdaemon`: the same command as the installed `revdaemon` script."""

from revdaemon.cli import main

if __name__ == "__main__":
    main()
