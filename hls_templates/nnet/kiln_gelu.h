// GELU, exact (erf) or tanh approximation, element-wise.
// Float mode evaluates the formula; fixed point reads gelu(x) from a table over
// [table_min, table_max) and is exact outside it (0 below, x above).
#ifndef KILN_GELU_H_
#define KILN_GELU_H_

#include "kiln_common.h"

namespace kiln {

// The contract of kiln::gelu: generated configs inherit this and override every field.
struct gelu_config {
    static const unsigned n_elem = 1;
    static const unsigned reuse_factor = 1;
    static const bool use_table = false;
    static const bool tanh_form = false;  // the tanh approximation (approximate="tanh")
    static const unsigned table_size = 4096;
    static constexpr float table_min = -8.0f;
    static constexpr float table_max = 8.0f;
    typedef float table_t;
};

inline float gelu_exact(float x, bool tanh_form) {
    if (tanh_form) return 0.5f * x * (1.0f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f));
}

template <class data_T, class res_T, typename CONFIG_T>
void gelu(const data_T data[CONFIG_T::n_elem], res_T res[CONFIG_T::n_elem]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    static typename CONFIG_T::table_t table[CONFIG_T::table_size];
    static bool initialized = false;
    if (CONFIG_T::use_table && !initialized) {
        for (unsigned i = 0; i < CONFIG_T::table_size; i++)
            table[i] = (typename CONFIG_T::table_t)gelu_exact(
                CONFIG_T::table_min + (CONFIG_T::table_max - CONFIG_T::table_min) * (i + 0.5f) / CONFIG_T::table_size,
                CONFIG_T::tanh_form);
        initialized = true;
    }
Elements:
    for (unsigned i = 0; i < CONFIG_T::n_elem; i++) {
        const float x = to_float(data[i]);
        if (!CONFIG_T::use_table) {
            res[i] = (res_T)gelu_exact(x, CONFIG_T::tanh_form);
        } else if (x < CONFIG_T::table_min) {
            res[i] = 0;
        } else if (x >= CONFIG_T::table_max) {
            res[i] = (res_T)data[i];
        } else {
            int index = (int)((x - CONFIG_T::table_min) * (CONFIG_T::table_size / (CONFIG_T::table_max - CONFIG_T::table_min)));
            if (index > (int)CONFIG_T::table_size - 1) index = CONFIG_T::table_size - 1;
            res[i] = (res_T)table[index];
        }
    }
}

} // namespace kiln

#endif
