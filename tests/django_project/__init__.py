"""A minimal Django project for the s3sync.contrib.django tests."""
