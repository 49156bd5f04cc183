"""The HL7 v2 door: SIU over MLLP (and over HTTP), in and out.

Data first: bytes in, plain values out. ``mllp`` frames bytes, ``er7`` turns a frame into a
``Message`` of plain strings, ``siu`` maps one to FHIR resources by tables, ``ack`` builds the
answer. Only the listener and the outbound sender touch sockets; only the bridge touches the
services.
"""
