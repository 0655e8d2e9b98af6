"""Data: the sample type shared by every reader, the synthetic benchmark and the real IVS data sets."""
from evtp.data.readers import DATASETS, DatasetFileError, DatasetReader, SampleError, open_dataset
from evtp.data.types import Sample

__all__ = ["Sample", "DATASETS", "DatasetReader", "DatasetFileError", "SampleError", "open_dataset"]
