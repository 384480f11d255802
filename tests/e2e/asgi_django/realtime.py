"""The project's hub: one node for the process, used by asgi.py (mount) and views (publish)."""

from tether.asgi import HubApp
from tether.hub import HubConfig, Node

API_KEY = "asgi-api-key"

node = Node(HubConfig(allow_anonymous=True, api_key=API_KEY))
hub = HubApp(node)
