"""The smallest Django settings module that installs s3sync's app.

No S3_* name is set here: each test sets its server, bucket and folders with
``override_settings``, and the subprocess tests pass theirs through the environment (the
fallback for names Django's settings leave unset).
"""

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["s3sync.contrib.django"]
DATABASES: dict[str, dict[str, str]] = {}

# The publishing tests render templates and call views through Django's test client.
ALLOWED_HOSTS = ["testserver"]
ROOT_URLCONF = "tests.django_project.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [], "APP_DIRS": True}]
