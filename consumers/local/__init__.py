"""For laptops, the demo and the tests: the embedded broker, the demo, the CER metric.

The worker's own path never imports this package; production points at Apache Kafka.
"""
