"""affidavit.proto (package affidavit.v1) and its generated modules."""
