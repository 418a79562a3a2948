"""``python -m s3sync``: the same as the ``s3sync`` command."""

from s3sync.cli import main

if __name__ == "__main__":
    main()
