"""The peer benchmark: s3sync against aws-cli, s5cmd and rclone on one local S3 server (``python -m bench.run``)."""
