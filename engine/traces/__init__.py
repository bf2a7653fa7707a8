"""Trace readers: format detection, parsing, the chat template, tokenizing, and the generator."""
