// bindings.cpp (emulator) - pyfast._C_emu.emulator: the emulated card, the scheduling order,
// "device" memory for the CuPy stand-in (pyfast/emulator), counters and the self-tests.
// csrc/bindings.cpp's module calls bind_emulator() in the emulated build only.

#include <cxxabi.h>
#include <dlfcn.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "pyfast_emu_control.h"
#include "profile.h"
#include "profile_probe.h"
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

std::string demangle(const std::string& symbol) {
    int status = 0;
    char* readable = abi::__cxa_demangle(symbol.c_str(), nullptr, nullptr, &status);
    std::string result = status == 0 && readable != nullptr ? readable : symbol;
    std::free(readable);
    return result;
}

// The recorded launches as dicts; sites as offsets into this module (for addr2line).
py::list profile_stop() {
    Dl_info info{};
    dladdr(reinterpret_cast<void*>(&demangle), &info);
    const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(info.dli_fbase);
    py::list launches;
    for (const profile::LaunchCounts& l : profile::stop()) {
        py::dict d;
        d["kernel"] = demangle(l.kernel);
        d["symbol"] = l.kernel;
        d["grid"] = py::make_tuple(l.grid.x, l.grid.y, l.grid.z);
        d["block"] = py::make_tuple(l.block.x, l.block.y, l.block.z);
        d["dynamic_shared"] = l.dynamic_shared;
        d["static_shared"] = l.static_shared;
        d["blocks"] = l.blocks;
        d["sampled_blocks"] = l.sampled_blocks;
        d["run_blocks"] = l.run_blocks;
        d["barriers"] = l.barriers;
        d["unique_read_sectors"] = l.unique_read_sectors;
        d["unique_write_sectors"] = l.unique_write_sectors;
        d["read_allocation_bytes"] = l.read_allocation_bytes;
        d["written_allocation_bytes"] = l.written_allocation_bytes;
        py::list sites;
        for (const profile::SiteCounts& c : l.sites) {
            py::dict s;
            s["offset"] = c.site - base;
            s["space"] = c.kind == 0 ? "global" : "shared";
            s["op"] = c.atomic ? "atomic" : (c.write ? "store" : "load");
            s["bytes"] = c.bytes;
            s["requests"] = c.requests;
            s["lanes"] = c.lanes;
            s["sectors"] = c.sectors;
            s["ideal_sectors"] = c.ideal_sectors;
            s["wavefronts"] = c.wavefronts;
            s["ideal_wavefronts"] = c.ideal_wavefronts;
            sites.append(s);
        }
        d["sites"] = sites;
        py::list code;
        for (const auto& [address, count] : l.code) code.append(py::make_tuple(address - base, count));
        d["code"] = code;
        launches.append(d);
    }
    return launches;
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
    m.def("register_host_memory",
          [](std::uintptr_t p, std::size_t bytes) { register_host_memory(reinterpret_cast<const void*>(p), bytes); },
          py::arg("ptr"), py::arg("nbytes"),
          "Host memory kernels will use as device memory (a PyTorch CPU tensor's storage): the profiler counts "
          "accesses to it; not counted against the card's memory.");
    m.def("unregister_host_memory",
          [](std::uintptr_t p, std::size_t bytes) { unregister_host_memory(reinterpret_cast<const void*>(p), bytes); },
          py::arg("ptr"), py::arg("nbytes"), "Ends one register_host_memory of the same range.");
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
    m.def("profiled", &profile::instrumented,
          "Whether this build's kernels record their memory accesses (PYFAST_EMU_PROFILE=1 at build time).");
    m.def("profile_start", &profile::start, py::arg("sample_blocks") = 0, py::arg("run_sampled_only") = false,
          "Record every launch from now on: counters of at most sample_blocks blocks per launch (0: all); with "
          "run_sampled_only the others do not run (counts only; the results are then wrong).");
    m.def("profile_stop", &profile_stop, "The launches recorded since profile_start, as dicts; stops recording.");
    m.def("profile_module", [] {
        Dl_info info{};
        dladdr(reinterpret_cast<void*>(&demangle), &info);
        return std::string(info.dli_fname != nullptr ? info.dli_fname : "");
    }, "The file of this module, which the sites' offsets point into.");
    m.def("profile_probes", &profile_probe_names, "The profiler's probe kernels' names (csrc/emu/profile_probe.cu).");
    m.def("run_profile_probe", [](const std::string& name) {
        cudaError_t status = cudaSuccess;
        if (!run_profile_probe(name, &status)) throw py::value_error("no profile probe named " + name);
        return std::string(cudaGetErrorName(status));
    }, py::arg("name"), "Launches one probe kernel; its launch's status name.");
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
