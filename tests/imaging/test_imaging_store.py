

def test_study_pixels_are_read_only_so_the_id_keeps_meaning_its_hash():
    import numpy as np
    import pytest

    from tools.study import Study, pixel_hash

    study = Study.from_array(np.linspace(0, 1, 128 * 96, dtype=np.float32).reshape(96, 128))
    assert not study.pixels.flags.writeable
    with pytest.raises(ValueError):
        study.pixels[0, 0] = 0.5
    assert study.id == pixel_hash(study.pixels)
