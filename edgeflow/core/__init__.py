"""Core: slicing, codecs, exits, profiles, plans. torch + numpy + stdlib only: no network, no clocks."""
