# Emulator workaround, not provisioning: LocalStack 4.14's default (twisted) gateway ignores
# the host part of GATEWAY_LISTEN for IPv4 and listens on 0.0.0.0
# (localstack/runtime/server/twisted.py: "TODO: interface = host?"). START hooks run inside
# LocalStack's process before the gateway binds, so hand the configured host to twisted here.
# (GATEWAY_SERVER=hypercorn honours the host but measured ~35% slower.) Harmless if fixed upstream.
from twisted.internet import endpoints

from localstack import config

_listen_hosts = {address.port: address.host for address in config.GATEWAY_LISTEN}
_tcp4_endpoint = endpoints.TCP4ServerEndpoint


def _bound_to_configured_host(reactor, port, backlog=50, interface=""):
    return _tcp4_endpoint(reactor, port, backlog, interface or _listen_hosts.get(port, ""))


endpoints.TCP4ServerEndpoint = _bound_to_configured_host
