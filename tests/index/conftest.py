import faiss
import pytest


@pytest.fixture(autouse=True, scope="package")
def one_faiss_thread():
    # faiss's OpenMP threads spin while waiting: on a shared 2-core machine the tiny searches of
    # these tests ran twice as slow with two threads as with one.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
