"""The private parts of Twisted's HTTP channel that the HTTP port's channel (http.py) builds on.

``_Channel`` reads and sets attributes Twisted does not promise to keep (the request line's
parts, the head's size so far, the body's decoder, the buffer of a pipelined request) and
overrides hooks Twisted calls by name.  A Twisted release that renames one would break the port
in ways the HTTP tests show only as dropped connections; this says which name went.
"""

import twisted
from twisted.internet.testing import StringTransport
from twisted.web import http, resource, server

#: Read or set by _Channel on a channel whose request head is under way.
STATE = ("_command", "_path", "_version", "_receivedHeaderSize", "_transferDecoder",
         "_dataBuffer", "_networkProducer", "_buffer", "line_mode", "paused", "length",
         "requests", "totalHeadersSize", "MAX_LENGTH")
#: Called by _Channel, or overridden by it and called by Twisted.
METHODS = ("_finishRequestBody", "_respondToBadRequestAndDisconnect", "clearLineBuffer",
           "allHeadersReceived", "allContentReceived", "lineLengthExceeded", "lineReceived",
           "rawDataReceived", "headerReceived", "pauseProducing", "resumeProducing")


def test_the_channel_attributes_the_http_port_relies_on_are_in_the_installed_twisted():
    site = server.Site(resource.Resource())
    site.protocol = http.HTTPChannel  # as http.py's _Site has it (protocol = _Channel)
    channel = site.buildProtocol(None)
    channel.makeConnection(StringTransport())
    # A head under way: its request line and one header read, the end not yet.
    channel.dataReceived(b"POST /write HTTP/1.1\r\nContent-Length: 3\r\nHost: x\r\n")
    missing = [name for name in STATE if not hasattr(channel, name)]
    missing += [name for name in METHODS if not callable(getattr(channel, name, None))]
    assert not missing, (
        "Twisted %s's HTTPChannel no longer has %s, which vmstats/server/http.py's _Channel "
        "uses: adapt _Channel to this release" % (twisted.__version__, ", ".join(missing)))
    assert (channel._command, channel._path, channel._version) == (
        b"POST", b"/write", b"HTTP/1.1"), "the request line's parts are no longer these"
    assert channel._receivedHeaderSize > 0 and channel.length == 3
