"""Everything that writes to Kafka: the scan publisher (library + ``medocr publish``),
the result / dead-letter / progress publishers, and the one place producer options live.
"""
