"""Just enough settings for two views: no database, no middleware, no apps."""

SECRET_KEY = "triowsgi-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djangoapp.urls"
USE_TZ = True
