// nf-core style module: glmkit call
process GLMKIT_CALL {
    tag "$meta.id"
    label 'process_medium'
    container "${ params.glmkit_container ?: 'glmkit:latest' }"

    input:
    tuple val(meta), path(fasta)

    output:
    tuple val(meta), path("${prefix}.elements.zarr"), emit: elements
    path "versions.yml", emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    glmkit call ${fasta} -o ${prefix}.elements.zarr --threads ${task.cpus} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    mkdir ${prefix}.elements.zarr

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        glmkit: \$(glmkit --version | sed 's/glmkit, version //')
    END_VERSIONS
    """
}
