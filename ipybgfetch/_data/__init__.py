"""Bodies on disk to data: DataFrame readers (:mod:`.frames`) and safe archive extraction
(:mod:`.archive`). Used by the public record objects; imports only the bottom modules.
"""
