"""The one exception hierarchy of the merkle library.

Every failure the library reports is a MerkleError; each kind of failure has exactly one
subclass, so callers can catch precisely what they mean to handle.
"""


class MerkleError(Exception):
    """Base class of every error raised by the merkle library."""


class ProofError(MerkleError):
    """An inclusion or consistency proof does not verify, or cannot be made for the given sizes."""


class TileError(MerkleError):
    """A tile path, coordinate or tile content is malformed or out of range."""


class MalformedNoteError(MerkleError):
    """A signed note's text does not follow the C2SP signed-note format."""


class MalformedKeyError(MerkleError):
    """A signer or verifier key text does not follow the C2SP signed-note key format."""


class UnverifiedNoteError(MerkleError):
    """A note carries no valid signature from any of the given verifier keys."""


class InvalidSignatureError(MerkleError):
    """A signature from a known key does not verify: the note or the signature was altered."""


class MalformedCheckpointError(MerkleError):
    """A note body does not follow the C2SP tlog-checkpoint format."""


class MalformedProofError(MerkleError):
    """A tlog-proof's text does not follow the C2SP tlog-proof format."""
