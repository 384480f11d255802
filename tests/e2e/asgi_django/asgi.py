"""The project's ASGI application: the hub under /realtime, Django for everything else."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asgi_django.settings")

from django.core.asgi import get_asgi_application

from asgi_django.realtime import hub
from tether.asgi import PathRouter

application = PathRouter({"/realtime": hub}, default=get_asgi_application())
