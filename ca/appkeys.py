"""Every `web.AppKey` of the ACME application, declared once."""

from aiohttp import web

from ca.services import Services

SERVICES = web.AppKey("services", Services)
