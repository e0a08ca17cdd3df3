// Element-wise Not and Cast: bool masks and type changes as exported graphs have them
// (Cast of a comparison to float, of a float mask to bool, of ids between integer types).
// The comparisons and And/Or/Xor are kiln::binary ops (kiln_eltwise.h): they broadcast.
#ifndef KILN_LOGIC_H_
#define KILN_LOGIC_H_

#include "kiln_common.h"

namespace kiln {

// The kernel of a kiln::unary_logic layer; the emitter (logic.py) writes `kiln::logic_op::<name>`.
//   logical_not: !x (bool in, bool out)
//   to_bool:     x != 0 (Cast to bool from any type)
//   truncate:    the integer part, rounded toward zero (Cast from float/fixed to an integer type)
//   convert:     the value in the output type (Cast to float/fixed, or between integer types)
enum class logic_op { logical_not, to_bool, truncate, convert };

// The contract of kiln::unary_logic: generated configs inherit this and override every field.
struct unary_logic_config {
    static const unsigned n_elem = 1;
    static const logic_op op = logic_op::convert;
    static const unsigned reuse_factor = 1;
};

template <class data_T, class res_T, typename CONFIG_T>
void unary_logic(const data_T data[CONFIG_T::n_elem], res_T res[CONFIG_T::n_elem]) {
    #pragma HLS INLINE off
    #pragma HLS PIPELINE II = CONFIG_T::reuse_factor
    for (unsigned i = 0; i < CONFIG_T::n_elem; i++) {
        if (CONFIG_T::op == logic_op::logical_not) res[i] = (res_T)(data[i] == 0);
        else if (CONFIG_T::op == logic_op::to_bool) res[i] = (res_T)(data[i] != 0);
        else if (CONFIG_T::op == logic_op::truncate) res[i] = (res_T)(long long)as_double(data[i]);
        else res[i] = (res_T)data[i];
    }
}

} // namespace kiln

#endif
