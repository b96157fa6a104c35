// Host <-> device copy bandwidth of one GPU, as llama.cpp moves logits (bench/pcie_device.sh):
// cudaMemcpyAsync from device memory into pinned host memory (cudaMallocHost, what llama.cpp's
// output buffer is: src/llama-context.cpp:2196-2201, ggml-cuda.cu:1279), and the same into
// pageable memory and from host to device, timed with CUDA events. Prints CSV:
// direction,host_memory,bytes,reps,median_us,min_us,gb_s (gb_s = bytes / median / 1e9).
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
    fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)); exit(1); } } while (0)

static void run(const char *dir, const char *mem, void *dst, const void *src, size_t n, cudaMemcpyKind kind,
                cudaStream_t s, int reps) {
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) CHECK(cudaMemcpyAsync(dst, src, n, kind, s));  // warm-up
    CHECK(cudaStreamSynchronize(s));
    std::vector<float> t(reps);
    for (int i = 0; i < reps; i++) {
        CHECK(cudaEventRecord(a, s));
        CHECK(cudaMemcpyAsync(dst, src, n, kind, s));
        CHECK(cudaEventRecord(b, s));
        CHECK(cudaEventSynchronize(b));
        CHECK(cudaEventElapsedTime(&t[i], a, b));
    }
    std::sort(t.begin(), t.end());
    double med = t[reps / 2] * 1e3, mn = t[0] * 1e3;  // us
    printf("%s,%s,%zu,%d,%.2f,%.2f,%.2f\n", dir, mem, n, reps, med, mn, n / (med * 1e-6) / 1e9);
    CHECK(cudaEventDestroy(a));
    CHECK(cudaEventDestroy(b));
}

int main() {
    const size_t sizes[] = {65536, 524288, 1048576, 4194304, 16777216, 33554432, 67108864, 134217728};
    const size_t max = 134217728;
    void *dev, *pinned, *pageable;
    CHECK(cudaMalloc(&dev, max));
    CHECK(cudaMallocHost(&pinned, max));
    pageable = malloc(max);
    CHECK(cudaMemset(dev, 1, max));
    std::fill((char *) pinned, (char *) pinned + max, 1);
    std::fill((char *) pageable, (char *) pageable + max, 1);
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    printf("direction,host_memory,bytes,reps,median_us,min_us,gb_s\n");
    for (size_t n : sizes) {
        int reps = n <= 4194304 ? 200 : 50;
        run("d2h", "pinned", pinned, dev, n, cudaMemcpyDeviceToHost, s, reps);
        run("h2d", "pinned", dev, pinned, n, cudaMemcpyHostToDevice, s, reps);
        run("d2h", "pageable", pageable, dev, n, cudaMemcpyDeviceToHost, s, reps);
        run("h2d", "pageable", dev, pageable, n, cudaMemcpyHostToDevice, s, reps);
    }
    return 0;
}
