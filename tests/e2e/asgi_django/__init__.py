"""A minimal Django ASGI project with the tether hub mounted at /realtime (tests only)."""
