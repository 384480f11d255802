"""Async views that publish through the hub's node, as a Django app's views would."""

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from asgi_django.realtime import node


@csrf_exempt
async def publish(request: HttpRequest) -> HttpResponse:
    body = json.loads(request.body)
    result = await node.publish(body["channel"], body["data"])
    return JsonResponse(result.to_json())


@csrf_exempt
async def restart(request: HttpRequest) -> HttpResponse:
    sessions = len(node.sessions)
    await node.shutdown(1012, "server restarting")
    return JsonResponse({"sessions": sessions})


async def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("django home")


urlpatterns = [
    path("", home),
    path("publish", publish),
    path("restart", restart),
]
