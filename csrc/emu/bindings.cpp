// bindings.cpp (emulator) - pyfast._C_emu.emulator: the emulated card, the scheduling order,
// "device" memory for the CuPy stand-in (pyfast/emulator), counters and the self-tests.
// csrc/bindings.cpp's module calls bind_emulator() in the emulated build only.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "pyfast_emu_control.h"
#include "pyfast_emu_runtime.h"
#include "selftest.h"

namespace py = pybind11;

namespace pyfast_emu {
namespace {

// Host memory standing in for device memory; freed when the last NumPy view of it goes.
class Allocation {
public:
    explicit Allocation(std::size_t bytes) : bytes_(bytes), data_(device_alloc(bytes)) {
        if (data_ == nullptr) throw std::bad_alloc();
    }
    ~Allocation() { device_free(data_); }
    Allocation(const Allocation&) = delete;
    Allocation& operator=(const Allocation&) = delete;
    std::uintptr_t ptr() const { return reinterpret_cast<std::uintptr_t>(data_); }
    std::size_t bytes() const { return bytes_; }
    void* data() const { return data_; }

private:
    std::size_t bytes_;
    void* data_;
};

py::dict properties() {
    const DeviceProperties& d = device_properties();
    py::dict p;
    p["name"] = py::bytes(d.name);
    p["major"] = d.major;
    p["minor"] = d.minor;
    p["multiProcessorCount"] = d.multiprocessors;
    p["sharedMemPerBlock"] = d.shared_per_block;
    p["sharedMemPerBlockOptin"] = d.shared_per_block_optin;
    p["sharedMemPerMultiprocessor"] = d.shared_per_multiprocessor;
    p["maxThreadsPerMultiProcessor"] = d.max_threads_per_multiprocessor;
    p["maxThreadsPerBlock"] = 1024;
    p["warpSize"] = 32;
    p["regsPerBlock"] = d.registers_per_block;
    p["l2CacheSize"] = d.l2_bytes;
    p["totalGlobalMem"] = d.global_bytes;
    return p;
}

}  // namespace

void bind_emulator(py::module_& parent) {
    py::module_ m = parent.def_submodule("emulator", "The CPU emulator under pyfast._C_emu (csrc/emu).");
    m.def("properties", &properties, "The emulated card's properties, as cupy.cuda.runtime.getDeviceProperties.");
    m.def("presets", &presets, "Names of the cards the emulator can be.");
    m.def("select_device", [](const std::string& preset) {
        if (!select_device(preset.c_str())) throw py::value_error("emulated device: unknown preset " + preset);
    }, py::arg("preset"), "Become that card (its SM count, shared-memory limits, compute capability).");
    m.def("set_sm_count", &set_multiprocessors, py::arg("count"), "Report `count` SMs (the rules that size grids by it).");
    m.def("set_order", &set_order, py::arg("random"), py::arg("seed"),
          "Threads and blocks in an order drawn from seed (random=True), or in index order.");
    m.def("order", [] { return std::make_tuple(random_order(), order_seed()); });
    py::class_<Allocation>(m, "Allocation", py::buffer_protocol(),
                           "Host memory of exactly `nbytes`, 256-byte aligned, standing in for device memory.")
        .def(py::init<std::size_t>(), py::arg("nbytes"))
        .def_property_readonly("ptr", &Allocation::ptr)
        .def_property_readonly("nbytes", &Allocation::bytes)
        .def_buffer([](Allocation& a) {
            return py::buffer_info(a.data(), 1, py::format_descriptor<std::uint8_t>::format(), 1,
                                   {static_cast<py::ssize_t>(a.bytes())}, {static_cast<py::ssize_t>(1)}, false);
        });
    m.def("allocated_bytes", &allocated_bytes, "Bytes of emulated device memory in use.");
    m.def("poisons_static_shared", &poisons_static_shared,
          "Whether static __shared__ variables are poisoned before each block (the module's symbol table names "
          "them; a stripped build has none).");
    m.def("regrow_stack_pool", &regrow_stack_pool,
          "Grows the fibers' stack pool by one stack, releasing the old one; under AddressSanitizer 1 when the "
          "released range is left poisoned, else 0; -1 without it.");
    m.def("launch_errors", &launch_errors, "Launches that ended in a diagnostic so far.");
    m.def("last_diagnostic", [] { return last_diagnostic(); }, "The latest diagnostic's message.");
    m.def("sanitizers", [] {
#if defined(PYFAST_EMU_SANITIZERS)
        return std::string(PYFAST_EMU_SANITIZERS);
#else
        return std::string();
#endif
    }, "The sanitizers this build runs under (PYFAST_EMU_SANITIZE at build time; '' for none).");
    m.def("selftests", &selftest_names, "The self-test kernels' names.");
    m.def("run_selftest", [](const std::string& name) {
        cudaError_t status = cudaSuccess;
        std::vector<float> values;
        if (!run_selftest(name, &status, &values)) throw py::value_error("no self-test named " + name);
        return std::make_tuple(std::string(cudaGetErrorName(status)),
                               status == cudaSuccess ? std::string() : std::string(cudaGetErrorString(status)), values);
    }, py::arg("name"), "(CUDA error name, its description with the diagnostic, the 1024 floats written).");
}

}  // namespace pyfast_emu
