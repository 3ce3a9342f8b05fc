"""The classroom: rooms and the class wall, the "Can you tell?" study, breeding by hand."""
